"""Clock-free policies: routers, engine schedulers, admission, placement."""
