"""Herald for Django.

* ``herald.layers.RedisChannelLayer``: a drop-in ``CHANNEL_LAYERS`` backend, wire-compatible
  with ``channels_redis.core.RedisChannelLayer`` 4.3 and with ``herald serve``.
"""
