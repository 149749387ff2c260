"""What a dropped document says: text extraction as plain functions of a file, writing nothing.

The daemon commits what they return; a worker on another machine can run them too.
"""
