"""Plain Kafka tools for the command line: produce, read a topic to its end, and positions in a
topic said the way an operator says them.
"""
