"""Entitlement review: who can reach what (:mod:`.effective`), what they used (:mod:`.usage`),
what is stale or excessive (:mod:`.stale`), what would be narrower (:mod:`.suggest`), all of
it as one service (:mod:`.analysis`), and review campaigns that act on it (:mod:`.campaigns`)."""
