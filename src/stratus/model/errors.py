"""The one error hierarchy of Stratus.

StratusError                    base; every message tells the user what to do
├── InvalidInput                bad user input (400)
│   ├── TemplateError           template syntax, with line and column
│   └── ExpressionError         requirement/rank syntax, with position
├── NotFound                    a named object does not exist (404)
├── Conflict                    the object changed or is in use (409)
│   └── IllegalOperation        the VM's state does not allow the operation (409)
├── Unsupported                 the driver cannot do that, with its reason (409)
├── AuthError                   missing or wrong credentials (401)
├── SecretsError                stored credentials cannot be decrypted (500)
└── DriverError                 an outside system failed
    ├── HostUnreachable         the host does not answer
    └── DriverTimeout           the call took longer than its deadline
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "Conflict",
    "DriverError",
    "DriverTimeout",
    "ExpressionError",
    "HostUnreachable",
    "IllegalOperation",
    "InvalidInput",
    "NotFound",
    "SecretsError",
    "StratusError",
    "TemplateError",
    "Unsupported",
]


class StratusError(Exception):
    """Base of every error Stratus raises on purpose."""

    #: HTTP status the API answers with.
    status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def details(self) -> dict[str, object]:
        """Extra machine-readable fields for the API's error body."""
        return {}


class InvalidInput(StratusError):
    status = 400


class TemplateError(InvalidInput):
    """A template that cannot be parsed; names the line, column and what was expected."""

    def __init__(self, message: str, *, line: int, column: int, source: str = "template") -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.line = line
        self.column = column

    def details(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column}


class ExpressionError(InvalidInput):
    """A requirement or rank expression that cannot be parsed; names the position."""

    def __init__(self, message: str, *, expression: str, position: int) -> None:
        pointer = " " * position + "^"
        super().__init__(
            f"{message} at position {position + 1} of {expression!r}\n  {expression}\n  {pointer}"
        )
        self.expression = expression
        self.position = position

    def details(self) -> dict[str, object]:
        return {"expression": self.expression, "position": self.position + 1}


class NotFound(StratusError):
    status = 404


class Conflict(StratusError):
    status = 409


class IllegalOperation(Conflict):
    """The operation is not allowed in the VM's current state."""

    def __init__(self, operation: str, state: str, allowed: list[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"cannot {operation} a VM in state {state}",
            hint=f"operations allowed in {state}: {allowed_text}",
        )
        self.operation = operation
        self.state = state
        self.allowed = allowed

    def details(self) -> dict[str, object]:
        return {"state": self.state, "allowed": self.allowed}


class Unsupported(StratusError):
    """A driver does not support an operation; the reason comes from the driver."""

    status = 409


class AuthError(StratusError):
    status = 401


class SecretsError(StratusError):
    """Sealed credentials that the key in the data dir cannot open (changed key, corrupt row)."""

    status = 500


class DriverError(StratusError):
    """An outside system (hypervisor, cloud, host) failed."""

    status = 502


class HostUnreachable(DriverError):
    pass


class DriverTimeout(DriverError):
    status = 504
