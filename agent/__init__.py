"""The LiveKit worker: room -> agent id -> cached prompt -> voice session."""
