"""Errors raised for one request, with a message written for the client that sent it."""


class RequestError(ValueError):
    """What was wrong with this request; returned to its client as it is."""
