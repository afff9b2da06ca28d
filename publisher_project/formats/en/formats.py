"""English formats with times to the second, in UTC, ISO order: a job's times a few seconds apart must
read apart (the locale's own "Dec. 7, 2026, 5:47 a.m." drops the seconds)."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i:s"
