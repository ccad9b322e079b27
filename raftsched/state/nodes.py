"""Commands about the cluster: the leader's term and the members."""

from __future__ import annotations

from typing import Any

from ..model import AlertOn
from ..records import NodePolicy, NodeRecord, evolve
from .data import Result, StateData, ok, reject

__all__ = ["NodeCommands"]


class NodeCommands(StateData):
    def _note_node_event(self, kind: AlertOn, node: str, now_ms: int, reason: str | None) -> None:
        """An event for the alerts (`AlertCommands` notes it, when a rule wants it)."""

    def _apply_begin_term(self, body: dict[str, Any]) -> Result:
        term = body["term"]
        if term < self.term or (term == self.term and body["leader"] != self.leader):
            return reject("stale_term", f"term {term} is not newer than {self.term}")
        self.term, self.leader = term, body["leader"]
        for key in self.settings:
            if isinstance(body.get(key), int) and body[key] > 0:
                self.settings[key] = body[key]
        return ok(term=term)

    def _apply_register_node(self, body: dict[str, Any]) -> Result:
        """A node announces its address, tags, capacity and the policy of what it runs (absent in
        logs from before it was published: unknown); it is up from now on."""
        node_id = body["node"]
        if node_id in self.removed:
            return reject("removed", f"node {node_id!r} was removed from the cluster", "node")
        old = self.nodes.get(node_id)
        self.nodes[node_id] = NodeRecord(
            id=node_id,
            http=body["http"],
            raft=body["raft"],
            tags=dict(body.get("tags", {})),
            capacity=int(body.get("capacity", 8)),
            up=True,
            # A node that starts again takes runs again, unless an operator is removing it.
            draining=old.leaving if old else False,
            leaving=old.leaving if old else False,
            version=str(body.get("version", "")),
            updated_ms=body["now_ms"],
            policy=NodePolicy.from_dict(body.get("policy")),
        )
        self.node_active.setdefault(node_id, {})
        # The highest command version the node applies: absent from registrations before version 2.
        commands = body.get("commands", 1)
        self.published[node_id] = commands if isinstance(commands, int) and commands >= 1 else 1
        return ok()

    def _apply_set_cluster_version(self, body: dict[str, Any]) -> Result:
        """Raise the cluster's command version, once every member publishes that it applies it
        (a member that has not registered yet counts as version 1). It never goes down: commands
        of the version may already be in the log."""
        version = body.get("version")
        if not isinstance(version, int) or version < self.cluster_version:
            return reject("rejected", f"the cluster's version is {self.cluster_version}", "version")
        lowest = min((self.published.get(n, 1) for n in self.nodes), default=0)
        if version > lowest:
            return reject("rejected", f"a member applies command versions up to {lowest} only", "version")
        self.cluster_version = version
        return ok(cluster_version=version)

    def _apply_add_node(self, body: dict[str, Any]) -> Result:
        """An operator adds a member: recorded down until the node itself registers."""
        node_id, raft = body["node"], body["raft"]
        old = self.nodes.get(node_id)
        if old is not None:
            if old.raft != raft:
                return reject("already_exists", f"node {node_id!r} exists with raft {old.raft}", "id")
            return ok(node=node_id, created=False)
        if any(n.raft == raft for n in self.nodes.values()):
            return reject("already_exists", f"raft address {raft} is taken", "raft")
        self.removed.pop(node_id, None)
        self.nodes[node_id] = NodeRecord(
            id=node_id,
            http=body["http"],
            raft=raft,
            tags=dict(body.get("tags", {})),
            capacity=int(body.get("capacity", 8)),
            up=False,
            updated_ms=body["now_ms"],
        )
        self.node_active.setdefault(node_id, {})
        return ok(node=node_id, created=True)

    def _apply_drain_node(self, body: dict[str, Any]) -> Result:
        """Draining: no new runs; the leader moves pending ones and removes the node when idle."""
        node = self.nodes.get(body["node"])
        if node is None:
            return reject("not_found", f"no node {body['node']!r}", "id")
        draining = bool(body.get("draining", True))
        leaving = draining and (bool(body.get("leaving", False)) or node.leaving)
        self.nodes[node.id] = evolve(node, draining=draining, leaving=leaving, updated_ms=body["now_ms"])
        return ok(node=node.id, draining=draining, leaving=leaving)

    def _apply_remove_node(self, body: dict[str, Any]) -> Result:
        """The end of a drain: the node leaves the table once nothing is active on it."""
        node = self.nodes.get(body["node"])
        if node is None:
            return ok(node=body["node"], removed=False)
        if not node.leaving or self.node_active.get(node.id):
            return reject("rejected", f"node {node.id!r} is not drained", "id")
        del self.nodes[node.id]
        self.node_active.pop(node.id, None)
        self.node_executing.pop(node.id, None)
        self.published.pop(node.id, None)
        self.removed[node.id] = body["now_ms"]
        return ok(node=node.id, removed=True)

    def _apply_set_node(self, body: dict[str, Any]) -> Result:
        node = self.nodes.get(body["node"])
        if node is None:
            return reject("not_found", f"no node {body['node']!r}", "node")
        up = bool(body["up"])
        # A reason (commands before it carry none) is kept while the node is down.
        reason = None if up else body.get("reason")
        self.nodes[node.id] = evolve(
            node, up=up, updated_ms=body["now_ms"], down_reason=str(reason) if reason else None
        )
        if node.up and not up:
            self._note_node_event(AlertOn.NODE_DOWN, node.id, body["now_ms"], str(reason) if reason else None)
        return ok()

    def _apply_node_clocks(self, body: dict[str, Any]) -> Result:
        """The leader's measurement of the nodes' clocks (clockwatch.py)."""
        clocks = [(str(i["node"]), int(i["offset_ms"]), bool(i["ok"])) for i in body["clocks"]]  # all or none
        changed = 0
        for node_id, offset_ms, clock_ok in clocks:
            node = self.nodes.get(node_id)
            if node is not None:
                self.nodes[node_id] = evolve(node, clock_offset_ms=offset_ms, clock_ok=clock_ok)
                changed += 1
                if node.clock_ok and not clock_ok:
                    why = f"clock offset {offset_ms} ms"
                    self._note_node_event(AlertOn.NODE_CLOCK, node_id, body["now_ms"], why)
        return ok(changed=changed)

    def _apply_noop(self, body: dict[str, Any]) -> Result:
        return ok()
