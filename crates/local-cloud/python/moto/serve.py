"""moto server with DynamoDB writes that are atomic, as DynamoDB's are.

moto 5.2.5 applies the writes of a TransactWriteItems one by one while it checks their conditions, and when one
fails it puts back deep copies of the tables. Two things break that real DynamoDB never does:
- the writes applied before the failing check still emit stream records (a cancelled outbox write gets published);
- the restored tables have new stream shard objects, so every open shard iterator stops seeing new records.
Real DynamoDB evaluates every condition against the state before the transaction and writes nothing when one
fails. This launcher does that: it checks every condition first, raises TransactionCanceledException with the
per-item reasons if any fails, and only then applies the writes.

moto also deep-copies every table a transaction names before it writes, to restore them on failure. That makes
each transaction cost as much as the tables are large: a few hundred orders in, the outbox transactions take
seconds and the server's memory runs into gigabytes. This launcher keeps a copy of only the items a transaction
writes, and on an error while applying (an update expression that fails validation, say) puts those items and
the tables' stream records back as they were.

moto's server is threaded and checks a write's condition and applies it in two steps without a lock, so two
concurrent conditional writes (`available >= :q`) can both pass and oversell. Every DynamoDB write (and every
transaction, check and apply together) therefore runs under one lock.

moto's SQS builds every attribute of a queue, the three message counts among them (each a scan of all its
messages), whenever it reads one: for every message sent (to look up ContentBasedDeduplication) and three times
for every message received (to look up the retention period). With a few thousand messages waiting, a
ReceiveMessage of ten took seconds and the consumers fell further behind the longer a chaos run went. This
launcher computes an attribute only when it is asked for, and reads the retention period from the queue itself.

moto's SQS deletes a message by rebuilding the queue's list of messages without the lock that sends append under,
so a message sent while another is deleted can vanish: one event in ~60,000 of a 10k-order chaos run was lost
between EventBridge and its queue. Deletes take that lock here.

moto's SQS receives without a lock: two ReceiveMessage calls at once can both find a message visible and both
hand it out, so a record is delivered twice at the same moment, and its receive count passes maxReceiveCount
without the message moving to its DLQ. Receives of one queue take the queue's lock here (its long poll still
waits with the lock released, so sends go on).

moto's DynamoDB answers a Query of a table (not of an index) by listing and sorting every item of the table, then
keeping those of the asked partition: each Query costs as much as the table is large. With an event store read by
a Query per saga step and per projected order, a 500-order chaos run spent most of its time there. Here a Query of
a table lists the items of its partition only.

Usage (as moto_server): python serve.py -H 127.0.0.1 -p PORT
       python serve.py -H 127.0.0.1 --port-file PATH
The second form binds a port the kernel picks and, once it listens, writes the port to PATH (written to a temporary
name, then renamed, so a reader never sees half a number): the caller learns the port without choosing one first
and racing other processes for it.
"""

import copy
import functools
import json
import sys
import threading

from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.core.utils import camelcase_to_underscores, unix_time
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.comparisons import get_filter_expression
from moto.sqs.exceptions import InvalidAttributeName
from moto.sqs.models import Queue, SQSBackend

def _item_key(backend, op_type, op):
    if op_type == "Put":
        table = backend.get_table(op["TableName"])
        attrs = op["Item"]
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
        return key
    return op["Key"]


def transact_write_items(self, transact_items):
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    seen = set()
    reasons = []
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        if op_type not in ("ConditionCheck", "Put", "Delete", "Update"):
            raise MockValidationException(f"Unsupported transaction operation {op_type}")
        key = _item_key(self, op_type, op)
        identity = (op["TableName"], str(dict(sorted(key.items()))))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        condition = op.get("ConditionExpression")
        if condition is None:
            reasons.append((None, None, None))
            continue
        current = self.get_item(op["TableName"], key)
        check = get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        )
        if check.expr(current):
            reasons.append((None, None, None))
        else:
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    _apply_writes(self, transact_items)


def _apply_writes(backend, transact_items):
    """Applies the writes of a transaction whose conditions all hold, all or none."""
    previous_items = []  # (table, hash key, range key, a copy of the item before the write or None)
    stream_lengths = {}  # table name -> (table, its stream records before the transaction)
    try:
        for item in transact_items:
            op_type, op = next(iter(item.items()))
            if op_type == "ConditionCheck":
                continue
            table = backend.get_table(op["TableName"])
            key = _item_key(backend, op_type, op)
            hash_key, range_key = backend.get_keys_value(table, key)
            if table.stream_shard is not None:
                stream_lengths.setdefault(table.name, (table, len(table.stream_shard.items)))
            previous = copy.deepcopy(table.get_item(hash_key, range_key))
            previous_items.append((table, hash_key, range_key, previous))
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                backend.put_item(op["TableName"], op["Item"])
            elif op_type == "Delete":
                backend.delete_item(op["TableName"], key)
            else:
                backend.update_item(op["TableName"], key, op["UpdateExpression"], names, values)
    except Exception:
        for table, hash_key, range_key, previous in reversed(previous_items):
            table.delete_item(hash_key, range_key)
            if previous is not None:
                if range_key is not None:
                    table.items[hash_key][range_key] = previous
                else:
                    table.items[hash_key] = previous
        for table, length in stream_lengths.values():
            del table.stream_shard.items[length:]
        raise


DynamoDBBackend.transact_write_items = transact_write_items

_write_lock = threading.RLock()


def _serialized(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _write_lock:
            return method(*args, **kwargs)

    return locked


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _serialized(getattr(DynamoDBBackend, _name)))

# The table and partition of the Query of a table this thread is answering, for `all_items` below.
_query_partition = threading.local()

_table_query = Table.query
_table_all_items = Table.all_items


def query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
          projection_expressions, index_name=None, *args, **kwargs):
    """Table.query, telling `all_items` which partition a Query of the table (no index) reads."""
    if index_name is None and hash_key is not None:
        _query_partition.of = (self, hash_key)
    try:
        return _table_query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
                            scan_index_forward, projection_expressions, index_name, *args, **kwargs)
    finally:
        _query_partition.of = None


def all_items(self):
    """Table.all_items, or only the items of the partition a Query of this table reads (moto keeps only those)."""
    of = getattr(_query_partition, "of", None)
    if of is None or of[0] is not self:
        return _table_all_items(self)
    partition = self.items.get(of[1])  # a defaultdict: `get` does not add the partition
    if partition is None:
        return []
    items = list(partition.values()) if self.range_key_attr else [partition]
    return sorted(items, key=lambda x: x.range_key if x.range_key else x.hash_key)


Table.query = query
Table.all_items = all_items


def _queue_attributes(queue, wanted):
    """The attributes moto's Queue.attributes holds, restricted to the names in `wanted` (all when None)."""
    names = list(queue.BASE_ATTRIBUTES)
    if queue.fifo_queue:
        names += queue.FIFO_ATTRIBUTES
    if queue.kms_master_key_id:
        names += queue.KMS_ATTRIBUTES
    attributes = {}
    for name in names:
        if wanted is not None and name not in wanted:
            continue
        value = getattr(queue, camelcase_to_underscores(name))
        if name == "RedrivePolicy" and value:
            value = json.dumps(value)
        attributes[name] = str(value).lower() if isinstance(value, bool) else value
    return attributes


class _LazyQueueAttributes(dict):
    """Queue.attributes for moto's own lookups (`.get(name)`, `name in`): each value computed when asked for."""

    def __init__(self, queue):
        super().__init__()
        self._queue = queue

    def get(self, name, default=None):
        return _queue_attributes(self._queue, {name}).get(name, default)

    def __contains__(self, name):
        return name in _queue_attributes(self._queue, {name})


def get_queue_attributes(self, queue_name, attribute_names):
    queue = self.get_queue(queue_name)
    if not attribute_names:
        return {}
    valid_names = ["All"] + queue.BASE_ATTRIBUTES + queue.FIFO_ATTRIBUTES + queue.KMS_ATTRIBUTES
    invalid_name = next((name for name in attribute_names if name not in valid_names), None)
    if invalid_name or invalid_name == "":
        raise InvalidAttributeName(invalid_name)
    if "All" in attribute_names:
        return _queue_attributes(queue, None)
    attributes = _queue_attributes(queue, set(attribute_names))
    return {name: value for name, value in attributes.items() if value is not None}


def is_message_valid_based_on_retention_period(self, queue_name, message):
    retention_period = int(self.get_queue(queue_name).message_retention_period)
    return retention_period + message.sent_timestamp / 1000 > unix_time()


_delete_message = Queue.delete_message
_receive_message = SQSBackend.receive_message


def receive_message(self, queue_name, *args, **kwargs):
    with self.get_queue(queue_name)._messages_lock:
        return _receive_message(self, queue_name, *args, **kwargs)


def delete_message(self, receipt_handle):
    with self._messages_lock:
        _delete_message(self, receipt_handle)


Queue.attributes = property(_LazyQueueAttributes)
Queue.delete_message = delete_message
SQSBackend.receive_message = receive_message
SQSBackend.get_queue_attributes = get_queue_attributes
SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period

def serve_on_a_port_of_the_kernels(host, port_file):
    """moto.server.main, but bound to port 0 and reporting the port it got."""
    import os
    import signal

    from moto.moto_server.threaded_moto_server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    server = make_server(host, 0, app, threaded=True)
    port = server.socket.getsockname()[1]
    # moto builds queue URLs and other endpoints from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    partial = f"{port_file}.partial"
    with open(partial, "w") as out:
        out.write(f"{port}\n")
    os.replace(partial, port_file)
    server.serve_forever()


if __name__ == "__main__":
    if "--port-file" in sys.argv:
        import argparse

        parser = argparse.ArgumentParser()
        parser.add_argument("-H", "--host", default="127.0.0.1")
        parser.add_argument("--port-file", required=True)
        args = parser.parse_args()
        serve_on_a_port_of_the_kernels(args.host, args.port_file)
    else:
        from moto.server import main

        main(sys.argv[1:])
