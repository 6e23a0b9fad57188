"""The Autobahn WebSocket fuzzingclient against ferrocorn (see run.py)."""
