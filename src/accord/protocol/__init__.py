"""Sans-I/O protocol: channel state machine, adapters, transition graphs, deadlines, registry fold."""
