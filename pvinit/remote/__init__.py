"""The remote repository a fleet pulls from: layout, deltas, publishing."""
