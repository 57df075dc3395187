"""Local infrastructure for development, tests and benches: a broker, a cluster, a real model
server, and the child processes that run them.
"""
