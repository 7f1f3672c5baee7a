"""herald.layers.RedisChannelLayer next to the real channels_redis 4.3.0 on one Redis: every
operation works in both directions, so a site can switch process by process."""

import asyncio
import logging

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as PythonLayer

from herald.layers import RedisChannelLayer as HeraldLayer

RECEIVE = 5  # seconds; bounds every receive


async def recv(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), RECEIVE)


async def nothing_for(layer, channel, seconds=0.5):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), seconds)


def pair(hosts, prefix, **config):
    return (
        HeraldLayer(hosts=hosts, prefix=prefix, **config),
        PythonLayer(hosts=hosts, prefix=prefix, **config),
    )


MESSAGE = {
    "type": "user.message",
    "text": "héllo",
    "bytes": b"\x00\xff",
    "int": -(2**63),
    "uint": 2**64 - 1,
    "float": 1.5,
    "none": None,
    "flag": True,
    "list": [1, "two", [3.0]],
    "nested": {"a": {"b": []}},
}


@pytest.mark.parametrize("sharded", [False, True], ids=["one-shard", "three-shards"])
@pytest.mark.parametrize(
    "config",
    [{}, {"symmetric_encryption_keys": ["k1", "k0"]}],
    ids=["plain", "encrypted"],
)
async def test_every_operation_works_both_ways(hosts, sharded_hosts, prefix, sharded, config):
    herald, python = pair(sharded_hosts if sharded else hosts, prefix, **config)
    for sender, receiver in ((herald, python), (python, herald)):
        # A process-specific channel of the other side.
        channel = await receiver.new_channel()
        await sender.send(channel, MESSAGE)
        assert await recv(receiver, channel) == MESSAGE

        # A general channel.
        await sender.send("jobs", {"type": "job", "n": 1})
        assert await recv(receiver, "jobs") == {"type": "job", "n": 1}

        # Groups: joined on one side, sent to from the other, left again.
        a = await receiver.new_channel()
        b = await receiver.new_channel(prefix="other")
        await sender.group_add("room", a)
        await receiver.group_add("room", b)
        await sender.group_send("room", {"type": "chat", "text": "hi"})
        assert await recv(receiver, a) == {"type": "chat", "text": "hi"}
        assert await recv(receiver, b) == {"type": "chat", "text": "hi"}
        await sender.group_discard("room", a)
        await receiver.group_send("room", {"type": "chat", "text": "again"})
        assert await recv(receiver, b) == {"type": "chat", "text": "again"}
        await nothing_for(receiver, a)
        await receiver.group_discard("room", b)
    await herald.flush()


async def test_json_serializer_both_ways(hosts, prefix):
    herald, python = pair(hosts, prefix, serializer_format="json")
    for sender, receiver in ((herald, python), (python, herald)):
        channel = await receiver.new_channel()
        message = {"type": "t", "float": 1.0, "list": [1, None, "x"]}
        await sender.send(channel, message)
        assert await recv(receiver, channel) == message
    # Bytes cannot go into JSON: a TypeError, as json.dumps raises, and nothing is sent.
    with pytest.raises(TypeError):
        await herald.send("jobs", {"type": "t", "b": b"x"})
    await herald.flush()


async def test_the_stored_bytes_are_the_ones_channels_redis_reads(hosts, prefix):
    herald, python = pair(hosts, prefix)
    data = herald.serialize(MESSAGE)
    assert python.deserialize(data) == MESSAGE
    assert herald.deserialize(python.serialize(MESSAGE)) == MESSAGE
    assert herald._group_key("g") == python._group_key("g")
    for value in ("key_one", b"key_two", "specific.abc!"):
        assert herald.consistent_hash(value) == python.consistent_hash(value)


async def test_capacity_and_channel_full_match_channels_redis(hosts, prefix, caplog):
    herald, python = pair(hosts, prefix, capacity=2, channel_capacity={"tiny*": 1})
    for layer in (herald, python):
        await layer.send("tiny-1", {"type": "a"})
        with pytest.raises(ChannelFull):
            await layer.send("tiny-1", {"type": "b"})
        await layer.flush()

    # A herald consumer that does not receive leaves messages in Redis, as channels_redis
    # does: the third group_send is over capacity and logged like channels_redis logs it.
    channel = await herald.new_channel()
    await python.group_add("g", channel)
    caplog.set_level(logging.INFO)
    for n in range(3):
        await herald.group_send("g", {"type": "m", "n": n})
    assert [r.getMessage() for r in caplog.records if r.name == "herald.layers"] == [
        "1 of 1 channels over capacity in group g"
    ]
    assert (await recv(herald, channel))["n"] == 0
    assert (await recv(herald, channel))["n"] == 1
    await nothing_for(herald, channel)
    await herald.flush()


async def test_a_cancelled_receive_loses_nothing(hosts, prefix):
    herald, python = pair(hosts, prefix)
    channel = await herald.new_channel()
    for _ in range(20):
        await nothing_for(herald, channel, seconds=0.01)
    await python.send(channel, {"type": "after"})
    assert (await recv(herald, channel))["type"] == "after"
    await herald.flush()


def test_sync_code_needs_no_event_loop(hosts, prefix):
    herald, python = pair(hosts, prefix)

    async def make_channel():
        channel = await python.new_channel()
        await python.group_add("sync", channel)
        return channel

    # The channels_redis consumer lives on one loop of its own for the whole test.
    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(make_channel())
        # Many async_to_sync calls, each on a fresh loop: no "Event loop is closed".
        for n in range(20):
            async_to_sync(herald.group_send)("sync", {"type": "m", "n": n})
        # And the loop-free calls.
        assert herald.group_send_sync("sync", {"type": "m", "n": 20}) == 1
        herald.send_sync(channel, {"type": "m", "n": 21})
        for n in range(22):
            got = loop.run_until_complete(asyncio.wait_for(python.receive(channel), RECEIVE))
            assert got["n"] == n
        loop.run_until_complete(python.flush())
    finally:
        loop.close()


def test_one_layer_serves_several_event_loops(hosts, prefix):
    herald = HeraldLayer(hosts=hosts, prefix=prefix)
    channel = async_to_sync(herald.new_channel)()
    async_to_sync(herald.send)(channel, {"type": "one"})
    assert async_to_sync(recv)(herald, channel)["type"] == "one"
    assert asyncio.run(_send_and_receive(herald, channel))["type"] == "two"
    async_to_sync(herald.flush)()


async def _send_and_receive(layer, channel):
    await layer.send(channel, {"type": "two"})
    return await recv(layer, channel)


async def test_bad_input_gets_the_errors_channels_redis_raises_and_the_layer_goes_on(
    hosts, prefix
):
    herald = HeraldLayer(hosts=hosts, prefix=prefix)
    with pytest.raises(TypeError):
        await herald.send("bad name!!", {"type": "x"})
    with pytest.raises(TypeError):
        await herald.group_send("bad group!", {"type": "x"})
    with pytest.raises(AssertionError):
        await herald.send("jobs", ["not", "a", "dict"])
    with pytest.raises(AssertionError):
        await herald.send("jobs", {"__asgi_channel__": "x"})
    with pytest.raises(TypeError):
        await herald.send("jobs", {"type": "x", "set": {1, 2}})
    with pytest.raises(TypeError):
        await herald.send("jobs", {1: "int key"})
    with pytest.raises(OverflowError):
        await herald.send("jobs", {"type": "x", "big": 2**64})
    with pytest.raises(AssertionError):
        await herald.receive("specific.notmine!x")
    await herald.send("jobs", {"type": "fine"})
    assert (await recv(herald, "jobs"))["type"] == "fine"
    await herald.flush()


async def test_an_unreachable_redis_is_a_connection_error(prefix):
    from herald.layers import RedisError

    herald = HeraldLayer(hosts=["redis://127.0.0.1:1"], prefix=prefix)
    with pytest.raises(ConnectionError) as raised:
        await herald.send("jobs", {"type": "x"})
    assert isinstance(raised.value, RedisError)


def test_constructor_takes_channels_redis_arguments(redis_url):
    layer = HeraldLayer(
        hosts=[
            redis_url,
            ("127.0.0.1", 6379),
            {"host": "127.0.0.1", "port": 6379, "db": 2, "password": "pw"},
            {"address": f"{redis_url}/1", "retry_on_timeout": True},
            {"master_name": "m", "sentinels": [("127.0.0.1", 26379)], "sentinel_kwargs": {}},
        ],
        prefix="p",
        expiry=30,
        group_expiry=600,
        capacity=10,
        channel_capacity={"http.*": 5, __import__("re").compile(r"^ws\..*"): 7},
        symmetric_encryption_keys=["secret"],
        random_prefix_length=8,
        serializer_format="json",
    )
    assert layer.ring_size == 5
    assert layer.get_capacity("http.request") == 5
    assert layer.get_capacity("ws.x") == 7
    assert layer.get_capacity("other") == 10
    assert len(layer.client_prefix) == 32
    assert layer.extensions == ["groups", "flush"]
    with pytest.raises(ValueError):
        HeraldLayer(hosts="redis://localhost:6379")
    with pytest.raises(ValueError):
        HeraldLayer(serializer_format="pickle")


def test_django_settings_switch_only_the_backend(django_settings):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert isinstance(layer, HeraldLayer)
    async_to_sync(layer.group_send)("nobody", {"type": "x"})


def test_a_forked_child_gets_a_working_layer(hosts, prefix):
    """Celery's prefork pool and gunicorn --preload fork after the parent used the layer."""
    import os

    herald, python = pair(hosts, prefix)
    herald.group_send_sync("warm", {"type": "x"})  # the parent's runtime is running now

    async def consumer_channel():
        channel = await python.new_channel()
        await python.group_add("forked", channel)
        return channel

    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(consumer_channel())
        parent_prefix = herald.client_prefix
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if both calls worked
            import signal

            signal.alarm(15)  # a child stuck on the parent's threads must not outlive the test
            ok = False
            try:
                members = herald.group_send_sync("forked", {"type": "from.child"})
                async_to_sync(herald.group_send)("forked", {"type": "from.child.async"})
                ok = members == 1 and herald.client_prefix != parent_prefix
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        for kind in ("from.child", "from.child.async"):
            got = loop.run_until_complete(asyncio.wait_for(python.receive(channel), RECEIVE))
            assert got["type"] == kind
        # The parent's layer goes on working.
        assert herald.group_send_sync("forked", {"type": "parent"}) == 1
        loop.run_until_complete(python.flush())
    finally:
        loop.close()
