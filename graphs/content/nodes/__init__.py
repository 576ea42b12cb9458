"""One module per workflow node; each node is a plain async function of state and context."""
