"""The live pages' polls, told apart in the development server's request log (`django.server`)."""

from __future__ import annotations

import logging
import re

# The request lines of the polls: the publishing page's log (`?since=`) and summary (`?fragment=summary`)
# every 2 s, and the admin pages that re-read themselves while live (the publishings' changelist, the
# queue overview, a publishing's change page). The admin's polls are requests for the page itself: a
# reload of those pages is left out of the log as well.
_POLL = re.compile(
    r"GET (?:"
    r"/api/v1/publishing/[^/?]+/log\?since=\S*"
    r"|/publishings/[^/?]+/\?fragment=summary\S*"
    r"|/admin/publishing/publishing/(?:overview/|[^/?]+/change/)?(?:\?\S*)?"
    r") "
)


class LivePollsFilter(logging.Filter):
    """Leaves out the successful polls of the live pages; their errors, and every other request, stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if not isinstance(status, int) or status >= 400:
            return True
        request_line = record.args[0] if isinstance(record.args, tuple) and record.args else ""
        return not (isinstance(request_line, str) and _POLL.match(request_line))
