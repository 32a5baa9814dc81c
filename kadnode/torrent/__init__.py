"""BitTorrent v1 file sharing over the DHT: metadata, magnet links, piece storage, peer wire, fetch."""
