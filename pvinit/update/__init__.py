"""Over-the-air updates: the state machine, its journal, and the engine that drives them."""
