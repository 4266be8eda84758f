"""watch: follow a recording while the job runs (docs/watch.md).

- :mod:`moetrace.watch.follow`: new complete parts in, steps merged over ranks out;
- :mod:`moetrace.watch.state`: the online states, forecast and plan, updated incrementally;
- :mod:`moetrace.watch.view`: the live view, a pure function of a snapshot;
- :func:`watch`: the loop that ties them together.
"""

from moetrace.watch.follow import Follower, Merger
from moetrace.watch.loop import WatchResult, watch
from moetrace.watch.state import PlanSettings, WatchState

__all__ = ["Follower", "Merger", "PlanSettings", "WatchResult", "WatchState", "watch"]
