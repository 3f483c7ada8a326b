"""moto server with DynamoDB writes that are atomic, as DynamoDB's are.

moto 5.2.5 applies the writes of a TransactWriteItems one by one while it checks their conditions, and when one
fails it puts back deep copies of the tables. Two things break that real DynamoDB never does:
- the writes applied before the failing check still emit stream records (a cancelled outbox write gets published);
- the restored tables have new stream shard objects, so every open shard iterator stops seeing new records.
Real DynamoDB evaluates every condition against the state before the transaction and writes nothing when one
fails. This launcher does that: it checks every condition first, raises TransactionCanceledException with the
per-item reasons if any fails, and only then applies the writes.

moto's server is threaded and checks a write's condition and applies it in two steps without a lock, so two
concurrent conditional writes (`available >= :q`) can both pass and oversell. Every DynamoDB write (and every
transaction, check and apply together) therefore runs under one lock.

Usage (as moto_server): python serve.py -H 127.0.0.1 -p PORT
"""

import functools
import sys
import threading

from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.comparisons import get_filter_expression

_apply_transaction = DynamoDBBackend.transact_write_items


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
    # Every condition holds: moto's own implementation now applies the writes without a rollback.
    _apply_transaction(self, transact_items)


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

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
