"""privsql: a differential-privacy SQL proxy."""

__version__ = "0.1.0"
