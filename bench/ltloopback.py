"""libtorrent 2.1 confined to 127.0.0.0/8: the session settings and IP filter every libtorrent session in
the tests and benchmarks uses (facts found by experiment: /work/shared/design/libtorrent-on-loopback.md).

One place, so that a setting learnt the hard way is learnt once. The tests import it too (they may
depend on bench; bench never depends on tests). libtorrent is imported here at the top: import this
module only where libtorrent is wanted.
"""

from __future__ import annotations

from typing import Any, cast

import libtorrent as lt


def loopback_settings(host: str, port: int, alert_mask: int, *, peers: bool = False) -> lt.settings_pack:
    """A session on ``host:port`` only, nothing sent off loopback, its DHT not yet started (start it with
    ``apply_settings({"enable_dht": True})`` once the socket listens, if it is wanted).

    ``peers``: also make torrent peer connections, over plain TCP (kadnode speaks BEP 3 over TCP only);
    without it the session is DHT-only and connects to no peer."""
    settings: dict[str, Any] = {
        # An explicit loopback interface: with 0.0.0.0 libtorrent marks the loopback socket
        # local-only and never runs the DHT on it.
        "listen_interfaces": f"{host}:{port}",
        # Started once the socket is listening; otherwise the injected nodes are used up before any
        # socket exists and nothing is sent.
        "enable_dht": False,
        # A taken port must fail start, not silently move to another port.
        "listen_system_port_fallback": False,
        "max_retry_port_bind": 0,
        # Replace the public default router; bootstrap nodes come in as DHT state instead.
        "dht_bootstrap_nodes": "",
        # Everything that would send off loopback.
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        # One node per /24 by default, and every loopback node is in 127.0.0.0/24.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        # The default 8,000 B/s quota silently drops incoming queries once spent.
        "dht_upload_rate_limit": 10_000_000,
        # The default blocks an IP for 300 s after 5 messages/s; a test sends far more.
        "dht_block_ratelimit": 1_000_000,
        "dht_block_timeout": 1,
        # get_peers would first send obfuscated targets.
        "dht_privacy_lookups": False,
        # BEP 42 is skipped for 127/8 anyway; keep it from ever mattering.
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        # The ip_filter (loopback_only_filter) also guards the DHT.
        "apply_filter_to_dht": True,
        "alert_mask": alert_mask,
        "alert_queue_size": 10_000,
    }
    if peers:
        settings.update({
            "enable_outgoing_tcp": True,
            "enable_incoming_tcp": True,
            # libtorrent tries uTP first, then an encrypted handshake: seconds lost per connection to a
            # peer that speaks neither.
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "out_enc_policy": int(lt.enc_policy.disabled),
            "in_enc_policy": int(lt.enc_policy.disabled),
            # Several loopback peers on one machine: nothing to save bandwidth for, nothing to hide.
            "allow_multiple_connections_per_ip": True,
        })
    else:
        # No torrents, so no peer connections: only the DHT uses the UDP socket.
        settings.update({"enable_outgoing_utp": False, "enable_outgoing_tcp": False})
    return cast("lt.settings_pack", settings)


def loopback_only_filter() -> lt.ip_filter:
    """An ip_filter that blocks every IPv4 address except 127.0.0.0/8."""
    ip_filter = lt.ip_filter()
    ip_filter.add_rule("0.0.0.0", "255.255.255.255", 1)  # 1 = blocked
    ip_filter.add_rule("127.0.0.0", "127.255.255.255", 0)
    return ip_filter
