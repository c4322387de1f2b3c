"""The daemon's peers over HTTP, wired onto the web app: Bazarr's ASR API (asr), webhooks from
Jellyfin, Plex and Emby (hooks), and notifications with library refreshes out (notifications).

One function for the composition root, so the service adds one line, and the web layer only
calls what it is handed (it knows none of these modules).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .asr import AsrApi
from .config import LiveConfig
from .control import Control
from .events import EventBus
from .hooks import Hooks
from .intake import Intake
from .notifications import Notifications
from .queue import JobQueue
from .threads import Blocking


def integrations(live: LiveConfig, journal: JobQueue, bus: EventBus, intake: Intake,
                 control: Control,
                 blocking: Blocking) -> tuple[Callable[[web.Application], None], ...]:
    """What each adds to the web app (routes, and tasks that live as long as the app)."""
    return (AsrApi(live, journal, intake, control, blocking).register,
            Hooks(live, journal, intake, blocking).register,
            Notifications(live, journal, bus, blocking).register)
