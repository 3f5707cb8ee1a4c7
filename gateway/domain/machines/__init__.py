"""Non-human identities: the registry, credentials, revocation, and the
machine lane's certificate and scope rules.
"""
