"""The human lane: two-factor login, admission (menu, approval wait,
break-glass), self-service commands and ``ssh -L``.
"""
