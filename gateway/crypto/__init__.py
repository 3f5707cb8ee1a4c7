"""The certificate authorities and certificate parsing.

The only place asyncssh's key and certificate internals are touched.
"""
