"""The naive peer: the script a user would write instead of numsync, for the benchmark to beat.

Sequential, official SDKs for the carriers, `requests` for Vapi's v2 listing (page after page),
everything held in Python sets, diffed in Python. No retries, no journal, no database. With
``"import": true`` in its config (the reconcile benchmark) it then creates each missing number in
Vapi, one POST after another, without looking first.

Usage: python bench/naive_peer.py CONFIG_JSON   (the JSON bench_plan.py builds: urls, ca, creds)
Prints one JSON line: wall seconds, missing count, imported count, peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import requests
import telnyx
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from vonage import Auth, HttpClientOptions, Vonage
from vonage_numbers import ListOwnedNumbersFilter


class _Rebased(TwilioHttpClient):
    """The documented way to point the Twilio SDK elsewhere (a custom http_client)."""

    def __init__(self, base: str) -> None:
        super().__init__(timeout=30)
        self.base = base

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        return super().request(method, url.replace("https://api.twilio.com", self.base), *args, **kwargs)


def warm_imports() -> None:
    """What the SDKs import on first use, imported before the clock starts, as bench_plan.py does
    for numsync: the comparison is of listing and diffing, not of importing.

    Until 2026-11-27 the peer imported these inside its timed run (0.3 s for Twilio's API tree and
    0.5 s for Telnyx's resource modules on this machine) while numsync's side had them imported
    before: at 10,000 numbers that was a third of the peer's time, and its speed-ups were too high.
    """
    import httpcore  # noqa: F401 - httpx's transport, on the first client
    import telnyx.resources.phone_numbers  # noqa: F401 - every resource module, on first client.phone_numbers
    import twilio.rest.api.v2010  # noqa: F401 - the whole API tree, on first client.api.v2010


def main() -> None:
    cfg = json.loads(sys.argv[1])
    warm_imports()
    urls, creds = cfg["urls"], cfg["creds"]
    os.environ["REQUESTS_CA_BUNDLE"] = cfg["ca"]  # what a script would do for the Vonage sandbox
    t0 = time.monotonic()
    vapi: set[str] = set()
    page = 1
    while True:
        resp = requests.get(f"{urls['vapi']}/v2/phone-number", params={"page": page, "limit": 1000},
                            headers={"Authorization": f"Bearer {creds['vapi_key']}"}, timeout=30)
        body = resp.json()
        for rec in body["results"]:
            number = rec.get("number") or ""
            vapi.add(number if number.startswith("+") else "+" + number)
        if not body["metadata"].get("hasNextPage"):
            break
        page += 1
    owned: dict[str, dict[str, str]] = {}  # number -> what Vapi needs to import it
    tw = Client(creds["twilio_sid"], creds["twilio_token"], http_client=_Rebased(urls["twilio"]))
    for num in tw.api.v2010.accounts(creds["twilio_sid"]).incoming_phone_numbers.stream(page_size=1000):
        owned[num.phone_number] = {"provider": "twilio", "twilioAccountSid": creds["twilio_sid"],
                                   "twilioAuthToken": creds["twilio_token"]}
    tx = telnyx.Telnyx(api_key=creds["telnyx_key"], base_url=urls["telnyx"] + "/v2")
    for num in tx.phone_numbers.list(page_size=250):
        owned[num.phone_number] = {"provider": "telnyx", "credentialId": "cred-telnyx"}
    host = urls["vonage"].removeprefix("https://")
    vg = Vonage(Auth(api_key=creds["vonage_key"], api_secret=creds["vonage_secret"]),
                HttpClientOptions(rest_host=host, api_host=host, timeout=30))
    index = 1
    while True:
        nums, _count, nxt = vg.numbers.list_owned_numbers(ListOwnedNumbersFilter(size=100, index=index))
        owned.update(("+" + n.msisdn, {"provider": "vonage", "credentialId": "cred-vonage"}) for n in nums)
        if nxt is None:
            break
        index = nxt
    missing = owned.keys() - vapi
    imported = 0
    if cfg.get("import"):
        for number in sorted(missing):
            resp = requests.post(f"{urls['vapi']}/phone-number", json={"number": number, **owned[number]},
                                 headers={"Authorization": f"Bearer {creds['vapi_key']}"}, timeout=30)
            resp.raise_for_status()
            imported += 1
    wall = time.monotonic() - t0
    print(json.dumps({"wall_s": round(wall, 2), "missing": len(missing), "imported": imported,
                      "vapi": len(vapi), "owned": len(owned),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
