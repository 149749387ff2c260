"""The domain: ids, messages, plans, jobs, events and the interfaces of executors, services and
the bus. A leaf: it imports nothing of the project but `config`, so a worker on another machine
can run a step without the vault."""
