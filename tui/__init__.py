"""The Textual console for approvers and auditors (arrives with its own work item).

It calls the same domain services as the CLI (:class:`gateway.services.GatewayServices`).
"""
