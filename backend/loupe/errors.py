"""AppError family: what went wrong, as a status and a stable short code. Knows nothing of HTTP.

`AppError.body()` is the one place the error shape {"error", "code", "status"} is built: the API
edge sends it, and the run service stores it with a failed analysis.
"""


class AppError(Exception):
    """A failure the user can act on. Rendered as {"error", "code", "status"} at the API edge."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict:
        return {"error": self.message, "code": self.code, "status": self.status}

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with this error (e.g. Retry-After); none by default."""
        return {}

    @classmethod
    def from_body(cls, body: dict) -> "AppError":
        """The error a stored body describes (a failed analysis read back)."""
        return cls(str(body.get("error", "The analysis failed.")), code=str(body.get("code", "analysis_failed")),
                   status=int(body.get("status", 500)))


class NotFound(AppError):
    status = 404
    code = "not_found"


class UnknownModel(NotFound):
    code = "unknown_model"


class UnknownAnalysis(NotFound):
    code = "unknown_analysis"


class NoPatterns(NotFound):
    code = "no_patterns"


class NotReady(AppError):
    status = 409
    code = "not_ready"


class InvalidInput(AppError):
    status = 422
    code = "invalid_input"


class Unsupported(AppError):
    """Loupe cannot compute this exactly for this model, and says so before computing (the code
    names the reason, e.g. `no_attention`)."""

    status = 422
    code = "unsupported"


class TooLong(AppError):
    status = 413
    code = "too_long"


class TooManyJobs(AppError):
    status = 429
    code = "too_many_jobs"

    def __init__(self, message: str, *, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class WorkersBusy(TooManyJobs):
    """No worker answered a quick request (a token count) in time: all are computing analyses."""

    status = 503
    code = "workers_busy"


class AnalysisFailed(AppError):
    """An unexpected exception inside an analysis; the message names it (type and text)."""

    status = 500
    code = "analysis_failed"

    @classmethod
    def of(cls, exc: BaseException) -> "AnalysisFailed":
        text = " ".join(str(exc).split())[:500]
        return cls(f"The analysis failed: {type(exc).__name__}: {text}" if text else f"The analysis failed: {type(exc).__name__}.")


class Interrupted(AppError):
    status = 503
    code = "interrupted"


class ModelUnavailable(AppError):
    status = 503
    code = "model_unavailable"


class JobTimeout(AppError):
    status = 504
    code = "timeout"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
