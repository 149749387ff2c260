"""`ai-employee worker`: the slow steps' work for the daemons of a namespace, over Redis Streams."""
