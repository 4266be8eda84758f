"""watch: follow a recording while the job runs (docs/watch.md).

- :mod:`moetrace.watch.follow`: new complete parts in, steps merged over ranks out;
- :mod:`moetrace.watch.state`: the online states, forecast and plan (the adaptive policy's
  rule), updated incrementally; :meth:`WatchState.snapshot` is what a view shows;
- :func:`watch`: the loop that ties them together.

The live view itself is the CLI's (moetrace/cli/watch_view.py): the library never prints.
"""

from moetrace.watch.follow import Follower, Merger
from moetrace.watch.loop import WatchResult, watch
from moetrace.watch.state import PlanSettings, WatchState

__all__ = ["Follower", "Merger", "PlanSettings", "WatchResult", "WatchState", "watch"]
