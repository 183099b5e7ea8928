"""A BMC on 127.0.0.1 that speaks IPMI 2.0 over LAN (RMCP+, RAKP login, AES) and answers
DCMI's Get Power Reading and Get Temperature Reading as DCMI 1.5 lays them out.

Built on pyghmi's own BMC server (``pyghmi.ipmi.bmc.Bmc``, what OpenStack's virtualbmc
runs), in a process of its own: pyghmi's client and server share one socket loop per
process. What it reports comes from a JSON state file, read at every request, so a test
can move the power or switch DCMI off::

    {"power_w": 512, "inlet_c": 23, "dcmi": true, "measuring": true}

Run: ``python tests/agent/ipmi_bmc.py --port P --user U --password-file F --state S``.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import serversession

DCMI_NETFN, GROUP = 0x2C, 0xDC
GET_POWER_READING, GET_TEMPERATURE_READING = 0x02, 0x10
INLET_ENTITIES = (0x40, 0x37)  # DCMI inlet temperature entity ids (0x37: the older one)


_open_session_response = serversession.ServerSession.create_open_session_response


def _suite_3_only(self: Any, request: bytearray) -> bytearray:
    """pyghmi's server speaks cipher suite 3 (HMAC-SHA1, AES) alone but accepts any proposal;
    a real BMC of that kind refuses a SHA-256 proposal (RMCP+ status 0x11, invalid
    authentication algorithm), and a client then proposes suite 3. Do as that BMC does."""
    response: bytearray = _open_session_response(self, request)
    if len(request) > 12 and request[12] != 1:  # the authentication algorithm: 1 = RAKP-HMAC-SHA1
        response[1] = 0x11
    return response


serversession.ServerSession.create_open_session_response = _suite_3_only


class DcmiBmc(bmc.Bmc):  # type: ignore[misc]
    def __init__(self, authdata: dict[str, str], port: int, state: Path) -> None:
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.state = state

    def _state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state.read_text(encoding="utf-8"))
        return data

    def get_power_state(self) -> str:
        return "on"

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> Any:
        if request["netfn"] != DCMI_NETFN:
            return super().handle_raw_request(request, session)
        state = self._state()
        data = list(request.get("data") or [])
        if not state.get("dcmi", True) or not data or data[0] != GROUP:
            return session.send_ipmi_response(code=0xC1)  # invalid command: no DCMI here
        if request["command"] == GET_POWER_READING:
            watts = int(state["power_w"])
            # current, minimum, maximum, average (W), timestamp, statistics period (ms), state
            body = struct.pack("<BHHHHIIB", GROUP, watts, watts, watts, watts, 1_764_000_000, 1000,
                               0x40 if state.get("measuring", True) else 0x00)
            return session.send_ipmi_response(data=list(body))
        if request["command"] == GET_TEMPERATURE_READING:
            if len(data) < 3 or data[2] not in INLET_ENTITIES or state.get("inlet_c") is None:
                return session.send_ipmi_response(code=0xCB)  # requested sensor not present
            temp = int(state["inlet_c"])
            encoded = (abs(temp) & 0x7F) | (0x80 if temp < 0 else 0)
            return session.send_ipmi_response(data=[GROUP, 1, 1, encoded, 1])
        return session.send_ipmi_response(code=0xC1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    password = args.password_file.read_text().strip()
    server = DcmiBmc({args.user: password}, args.port, args.state)
    print("listening", flush=True)
    server.listen()


if __name__ == "__main__":
    main()
