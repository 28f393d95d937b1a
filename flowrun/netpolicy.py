"""Where the `http` action may connect: public addresses, and what the project file allows.

A URL rendered from shopper text (an order note) must not reach the shop's own network.
Every address a request would connect to is checked: a host name after resolution (the
connection then goes to exactly the addresses checked, so a name that resolves differently a
moment later cannot slip past), an IP literal before the request, and every redirect hop the
same way. Loopback, link-local, private, shared (100.64/10), multicast, reserved and
unspecified addresses are refused, also inside IPv4-mapped and NAT64 IPv6 addresses, unless
`channels.http.allow_hosts` names the host or a network that holds the address.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """The policy refuses this destination; retrying cannot change that."""


@dataclass(frozen=True)
class NetPolicy:
    hosts: frozenset[str] = frozenset()  # names allowed whatever they resolve to
    networks: tuple[Network, ...] = ()  # addresses allowed although not public

    @classmethod
    def allowing(cls, entries: Iterable[str]) -> NetPolicy:
        """From `allow_hosts`: host names, addresses, or networks such as 10.0.0.0/8 (read once
        per distinct list: the dispatcher asks for every send)."""
        return _allowing(tuple(entries))

    @classmethod
    def _parse(cls, entries: tuple[str, ...]) -> NetPolicy:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip().strip("[]"), strict=False))
            except ValueError:
                hosts.add(_name(entry))
        return cls(frozenset(hosts), tuple(networks))

    def refusal(self, host: str, address: str) -> str | None:
        """Why connecting to `address` (for `host`) is refused; None when it is allowed."""
        if _name(host) in self.hosts:
            return None
        try:
            ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{host!r} is not a canonical address"
        inner = _embedded_ipv4(ip)
        if any(ip in net or (inner is not None and inner in net) for net in self.networks):
            return None
        kind = _not_public(inner if inner is not None else ip)
        if kind is None:
            return None
        via = "" if address == host else f" resolves to {address}, which"
        return (
            f"{host}{via} is a {kind} address: the http action reaches public addresses only "
            f"(add the host or its network to channels.http.allow_hosts in the project file to allow it)"
        )


@functools.lru_cache(maxsize=64)
def _allowing(entries: tuple[str, ...]) -> NetPolicy:
    return NetPolicy._parse(entries)


def _name(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _not_public(ip: Address) -> str | None:
    for kind, test in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if test:
            return kind
    return None if ip.is_global else "non-public"


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver, then refuses the whole answer if any address is not allowed."""

    def __init__(self, policy: NetPolicy) -> None:
        self.policy = policy
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        for answer in answers:
            why = self.policy.refusal(host, answer["host"])
            if why is not None:
                raise Refused(why)
        return answers

    async def close(self) -> None:
        await self.inner.close()


def guarded_session(policy: NetPolicy) -> aiohttp.ClientSession:
    """An HTTP session whose every connection to a host name goes to addresses the policy
    allowed after resolution (IP literals are checked by the caller before each request: aiohttp
    connects to them without a resolver); it keeps no cookies. Use it inside a running loop."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar())


class GuardedClients:
    """Guarded sessions kept open while the dispatcher runs, one per policy, so sends to one
    host reuse their connections (keep-alive): a client made per send cost ~15 ms of CPU (its
    SSL context) and a TCP connection each, two thirds of the dispatcher's CPU in the
    end-to-end benchmark. A kept connection goes to an address the policy allowed when it was
    opened; every new connection and every redirect hop is checked as before."""

    def __init__(self) -> None:
        self._sessions: dict[NetPolicy, aiohttp.ClientSession] = {}

    def get(self, policy: NetPolicy) -> aiohttp.ClientSession:
        session = self._sessions.get(policy)
        if session is None or session.closed:
            session = self._sessions[policy] = guarded_session(policy)
        return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
