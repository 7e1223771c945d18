"""Neural network modules only: they never read files, globals or the network."""
