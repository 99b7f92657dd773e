"""numsync: keeps Vapi phone numbers in agreement with the carriers that own them."""
__version__ = "0.1.0"
