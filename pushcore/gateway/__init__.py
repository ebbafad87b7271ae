"""The gateway: what a push platform embeds (``pushcore.Server``).

==============  ==============================================================
module          job
==============  ==============================================================
``server``      ``Server``: listeners, HELLO/auth, routes, hooks, push/publish/
                broadcast, drain, redirect, the thread hand-over (``call``)
``delivery``    seq-ordered delivery per connection: inline backlog or
                NOTIFY-then-FETCH pages, acks, low priority on wake, collapse
==============  ==============================================================

Storage is :mod:`pushcore.store`; tokens are :mod:`pushcore.tokens`; the loop
underneath is :mod:`pushcore.loop`.
"""
