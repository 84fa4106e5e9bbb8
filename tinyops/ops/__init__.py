"""One module per op: its cache, ``<op>_forward``, ``<op>_backward`` (with derivation), value function."""
