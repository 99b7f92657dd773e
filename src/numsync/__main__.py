from numsync.cli import main

main()
