"""The federation runtime: a `Server` that owns each round, a `Client` that trains what it
is sent, and engines that carry messages between them (in-process, or Flower)."""
