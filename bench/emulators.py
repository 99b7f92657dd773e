"""Serve seeded emulations in a process of their own, so the benchmark measures only numsync.

Usage: python bench/emulators.py N LATENCY_SECONDS API [CA_DIR] [scattered|in-order]
Seeds the same deterministic data in every process (N carrier numbers split over Twilio, Telnyx
and Vonage, 1% of them missing in Vapi) and serves one API (vapi|twilio|telnyx|vonage), one
process per API as the real services are independent. Prints one JSON line with the URL, then
serves until its standard input closes.

The numbers are scattered over their ranges (the default) rather than seeded in their own order:
the APIs list an account's numbers in the order they were bought, which is not the numbers'
order, and numbers seeded in key order flattered whatever indexes rows as they arrive (before
migration 0008, a plan of a million numbers on SQLite: 32.7-32.8 s of the main process's CPU in
key order, 48.7-51.8 s scattered). ``in-order`` seeds them as the tables before 2026-11-28 did.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.telnyx import TelnyxEmulator
from numsync.sandbox.twilio import TwilioEmulator
from numsync.sandbox.vapi import VapiEmulator
from numsync.sandbox.vonage import VonageEmulator, make_tls

SID = "AC" + "b" * 32
CREDS = {
    "vapi_key": "bench-vapi-key",
    "twilio_sid": SID,
    "twilio_token": "bench-twilio-token",
    "telnyx_key": "bench-telnyx-key",
    "vonage_key": "benchkey",
    "vonage_secret": "bench-vonage-secret",
}


ORDERS = ("scattered", "in-order")


def _scattered(i: int) -> int:
    """The ``i``-th number's place in its seven-digit range: multiplying by a factor prime to 10**7
    is a permutation of the range, so numbers stay unique (for up to ten million a carrier)."""
    return (i * 2654435761) % 10**7


def main() -> None:
    n = int(sys.argv[1])
    latency = float(sys.argv[2])
    api = sys.argv[3]
    tmp = Path(sys.argv[4]) if len(sys.argv) > 4 else Path(tempfile.mkdtemp(prefix="numsync-bench-"))
    order = sys.argv[5] if len(sys.argv) > 5 else "scattered"
    if order not in ORDERS:
        raise SystemExit(f"emulators.py: the numbers' order is one of {', '.join(ORDERS)}, not {order!r}")
    place = _scattered if order == "scattered" else int
    ssl_ctx, ca = make_tls(tmp) if api == "vonage" else (None, None)
    vapi = VapiEmulator(api_key=CREDS["vapi_key"])
    twilio = TwilioEmulator(accounts={SID: CREDS["twilio_token"]})
    telnyx = TelnyxEmulator(api_key=CREDS["telnyx_key"])
    vonage = VonageEmulator(api_key=CREDS["vonage_key"], api_secret=CREDS["vonage_secret"])
    per = n // 3
    # Vapi records were created over time, one a second until a day ago: seeded "now", a million
    # of them would be stamped a millisecond apart (the emulation keeps createdAt unique) and run
    # into the future, and numsync's read of what is new since its listing would read the seed.
    start = datetime.now(UTC) - timedelta(days=1, seconds=n)
    for i in range(n):
        when = start + timedelta(seconds=i)
        carrier = i % 3
        in_vapi = i % 100 != 0  # 1% missing in Vapi
        if carrier == 0:
            number = f"+1415{place(i):07d}"
            if api == "twilio":
                twilio.add_number(SID, number, voice_url="https://api.vapi.ai/twilio/inbound_call")
            elif api == "vapi" and in_vapi:
                vapi.add("twilio", number=number, twilioAccountSid=SID, assistantId="asst-bench",
                         created_at=when)
        elif carrier == 1:
            number = f"+1970{place(i):07d}"
            if api == "telnyx":
                telnyx.add_number(number, connection_id="1")
            elif api == "vapi" and in_vapi:
                vapi.add("telnyx", number=number, credentialId="cred-telnyx", assistantId="asst-bench",
                         created_at=when)
        else:
            msisdn = f"4420{place(i):07d}"
            if api == "vonage":
                vonage.add_number(msisdn, country="GB")
            elif api == "vapi" and in_vapi:
                vapi.add("vonage", number="+" + msisdn, credentialId="cred-vonage", assistantId="asst-bench",
                         created_at=when)
    emu = {"vapi": vapi, "twilio": twilio, "telnyx": telnyx, "vonage": vonage}[api]
    emu.faults.latency = latency
    server = EmulatorServer(emu, ssl_context=ssl_ctx).start()
    print(json.dumps({"api": api, "url": server.url, "ca": str(ca) if ca else None, "per_carrier": per}),
          flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
