# Deliberately empty: `python -m replays.engine` must run without Django being configured.
