#!/usr/bin/env python3
"""An ICE agent nobody here wrote, for tests/no_direct_path.rs: aioice (PyPI, installed by
`cargo xtask provision` in target/test-python). One agent per network namespace; the
test passes the candidates between the two agents' pipes.

usage: aioice_agent.py controlling|controlled --stun ADDR:PORT [--turn ADDR:PORT
       --turn-user USER --turn-password PASSWORD [--turn-transport udp|tcp]]
       [--count N] [--timeout SECONDS]

Protocol, one JSON object per line:
1. prints {"event": "candidates", "ufrag", "pwd", "candidates": [SDP, ...]} once
   gathering is done;
2. reads the peer's such line on stdin, adds its candidates, and runs ICE;
3. prints {"event": "connected", "local": CANDIDATE, "remote": CANDIDATE} for the
   selected pair (CANDIDATE = {"type", "host", "port", "related"});
4. sends "ROLE i" for i in 0..N over the selected pair, over and over every 50 ms,
   and prints {"event": "data", "received": N, "from_peer": [...]} once all N of the
   peer's messages came in;
5. keeps sending until a line "close" on stdin, then closes and exits 0.

Anything that fails prints {"event": "error", "error": ...} and exits 1; the whole
run is bounded by --timeout.
"""

import argparse
import asyncio
import json
import os
import sys

import aioice


def emit(obj):
    print(json.dumps(obj), flush=True)


def endpoint(text):
    host, port = text.rsplit(":", 1)
    return (host, int(port))


def describe(candidate):
    related = None
    if candidate.related_address is not None:
        related = f"{candidate.related_address}:{candidate.related_port}"
    return {
        "type": candidate.type,
        "host": candidate.host,
        "port": candidate.port,
        "related": related,
    }


async def read_line():
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run(args):
    controlling = args.role == "controlling"
    options = {"stun_server": endpoint(args.stun)}
    if args.turn:
        options.update(
            turn_server=endpoint(args.turn),
            turn_username=args.turn_user,
            turn_password=args.turn_password,
            turn_transport=args.turn_transport,
        )
    connection = aioice.Connection(ice_controlling=controlling, components=1, **options)
    try:
        await connection.gather_candidates()
        emit(
            {
                "event": "candidates",
                "ufrag": connection.local_username,
                "pwd": connection.local_password,
                "candidates": [c.to_sdp() for c in connection.local_candidates],
            }
        )

        peer = json.loads(await read_line())
        connection.remote_username = peer["ufrag"]
        connection.remote_password = peer["pwd"]
        for sdp in peer["candidates"]:
            await connection.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
        await connection.add_remote_candidate(None)

        await connection.connect()
        # aioice keeps the selected pair of each component in `_nominated`; there is
        # no public accessor.
        pair = connection._nominated[1]
        emit(
            {
                "event": "connected",
                "local": describe(pair.local_candidate),
                "remote": describe(pair.remote_candidate),
            }
        )

        me, other = args.role, ("controlled" if controlling else "controlling")
        received = set()
        done = asyncio.Event()
        closing = asyncio.create_task(read_line())

        async def sender():
            i = 0
            while not closing.done():
                await connection.send(f"{me} {i % args.count}".encode())
                i += 1
                await asyncio.sleep(0.05)

        async def receiver():
            while True:
                data = (await connection.recv()).decode(errors="replace")
                name, _, index = data.partition(" ")
                if name == other and index.isdigit():
                    received.add(int(index))
                if len(received) == args.count and not done.is_set():
                    done.set()
                    emit(
                        {
                            "event": "data",
                            "received": len(received),
                            "from_peer": sorted(received),
                        }
                    )

        tasks = [asyncio.create_task(sender()), asyncio.create_task(receiver())]
        await closing
        for task in tasks:
            task.cancel()
        if not done.is_set():
            raise ConnectionError(
                f"only {len(received)} of the peer's {args.count} messages came in"
            )
    finally:
        await connection.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["controlling", "controlled"])
    parser.add_argument("--stun", required=True)
    parser.add_argument("--turn")
    parser.add_argument("--turn-user")
    parser.add_argument("--turn-password")
    parser.add_argument("--turn-transport", default="udp", choices=["udp", "tcp"])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=40)
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except BaseException as error:  # noqa: B036 - reported, then exit 1
        emit({"event": "error", "error": f"{type(error).__name__}: {error!r}"})
        # A thread may still be blocked reading stdin: leave without waiting for it.
        os._exit(1)


if __name__ == "__main__":
    main()
