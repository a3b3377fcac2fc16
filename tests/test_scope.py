"""A scope is one value for a server, a user's DMs, or the owners' every-server view."""

from __future__ import annotations

from bot.db.schema import OWNERS
from bot.scope import Scope

GUILD, USER = 910000000000000001, 930000000000000001


def test_each_kind_of_scope_names_its_serving_rows_and_its_share_of_the_engine() -> None:
    server, dm = Scope.of(GUILD, USER), Scope.of(None, USER)
    assert server == Scope.server(GUILD) and dm == Scope.dm(USER)
    assert (server.key, server.guild_id, server.owner, server.everything) == (GUILD, GUILD, ("server", GUILD), False)
    # a DM reads every server's default (the owners' rows) but queues as its user
    assert (dm.key, dm.guild_id, dm.owner, dm.everything) == (OWNERS, None, ("user", USER), False)
    assert (Scope.ALL.key, Scope.ALL.guild_id, Scope.ALL.everything) == (OWNERS, None, True)
    assert len({server, dm, Scope.ALL, Scope.dm(GUILD)}) == 4  # a user id never passes for a server's
