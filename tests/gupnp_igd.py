#!/usr/bin/python3
"""A UPnP IGD client nobody here wrote, for tests/upnp.rs: GNOME's GUPnP-IGD
(Debian's gir1.2-gupnpigd-1.0, through python3-gi). It discovers the gateway over
SSDP itself, maps one port, prints `mapped PROTO EXT_IP:EXT_PORT -> IP:PORT`, then
waits for a line `remove` on stdin, removes the mapping and prints `removed`.

usage: gupnp_igd.py PROTO EXTERNAL_PORT LOCAL_IP LOCAL_PORT LEASE DESCRIPTION
Exits 1 with `error ...` when the gateway refuses, 2 when nothing answers in 30 s.
"""

import sys

import gi

gi.require_version("GUPnPIgd", "1.0")
from gi.repository import GLib, GUPnPIgd  # noqa: E402


def main():
    proto, ext_port, local_ip, local_port, lease, description = sys.argv[1:7]
    igd = GUPnPIgd.SimpleIgd.new()
    loop = GLib.MainLoop()
    outcome = {"code": 2}

    def mapped(_igd, protocol, ext_ip, _replaces, eport, lip, lport, _desc):
        print(f"mapped {protocol} {ext_ip}:{eport} -> {lip}:{lport}", flush=True)
        outcome["code"] = 0
        loop.quit()

    def failed(_igd, error, protocol, eport, lip, lport, _desc):
        print(f"error {error.message} ({protocol} {eport} {lip}:{lport})", flush=True)
        outcome["code"] = 1
        loop.quit()

    def timeout():
        print("timeout: no gateway mapped the port", flush=True)
        loop.quit()
        return False

    igd.connect("mapped-external-port", mapped)
    igd.connect("error-mapping-port", failed)
    igd.add_port(proto, int(ext_port), local_ip, int(local_port), int(lease), description)
    GLib.timeout_add_seconds(30, timeout)
    loop.run()
    if outcome["code"] != 0:
        sys.exit(outcome["code"])
    if sys.stdin.readline().strip() == "remove":
        igd.remove_port(proto, int(ext_port))
        GLib.timeout_add_seconds(3, lambda: loop.quit() or False)
        loop.run()
        print("removed", flush=True)


if __name__ == "__main__":
    main()
