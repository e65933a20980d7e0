"""Testing Basalt apps: the real runtime on a temporary SQLite database.

::

    from basalt.testing import BasaltTest

    async def test_send():
        async with BasaltTest("functions") as t:
            await t.mutation("messages:send", {"author": "ann", "body": "hi"})
            assert len(await t.query("messages:list")) == 1

With pytest, the ``basalt`` fixture (from the plugin this package registers)
does the same for the app folder named by the ``basalt_app`` ini option
(default ``functions``) or the ``@pytest.mark.basalt_app("path")`` marker.
"""

from .harness import BasaltTest

__all__ = ["BasaltTest"]
