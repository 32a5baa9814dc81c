"""Where a node keeps what others stored on it: announced peers and BEP 44 items."""
