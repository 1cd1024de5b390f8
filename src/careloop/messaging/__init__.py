"""Messaging: the content library, message templates, the send-time policy and the send ledger."""
