"""The address a server of this package listens on: free to bind, and whether it is this machine only."""

import ipaddress
import socket

from datasets_scripts import InputError


def check_port(host: str, port: int) -> None:
    """The address can be served: nothing else listens there."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise InputError(f"--host {host} --port {port}: cannot serve there ({error.strerror or error}); another program "
                         "(an msmn-app already running?) may listen on that port: give another --port.") from None


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
