"""The pattern engine itself, on hand-built graphs."""
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from dataclasses import dataclass

from fusekit.engine.matcher import Match, Miss, closest, match_variant
from fusekit.engine.passes import order
from fusekit.engine.rewrite import apply
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, maybe, op
from fusekit.engine.state import IdentityMap, IdentitySet


def graph(nodes, inputs=("a", "b"), outputs=("y",), inits=()):
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2, 4]) for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], list(inits)),
        opset_imports=[helper.make_opsetid("", 17)])
    return gs.import_onnx(model)


def fusion(pattern, check=None):
    return Fusion("F", [Variant("v", pattern)], rewrite=lambda m, facts, emit: None, check=check)


def run(pattern, g, check=None, anchor=-1):
    f = fusion(pattern, check)
    return match_variant(g, f, f.variants[0], g.nodes[anchor])


def scalar(name, value):
    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def test_commutative_inputs_match_in_either_order():
    g = graph([helper.make_node("Add", ["b", "a"], ["t"], name="add"), helper.make_node("Relu", ["t"], ["y"], name="r")])
    m = run(op.Relu(op.Add(Var("a"), Var("b"))), g)
    assert isinstance(m, Match) and m["a"].name == "b" and m["b"].name == "a"


def test_non_commutative_inputs_keep_their_order():
    g = graph([helper.make_node("Sub", ["b", "a"], ["y"], name="sub")])
    x = Var("x")
    assert isinstance(run(op.Sub(x, Const("c")), g), Miss)


def test_a_name_binds_one_value():
    g = graph([helper.make_node("Mul", ["a", "b"], ["y"], name="mul")])
    x = Var("x")
    miss = run(op.Mul(x, x), g)
    assert isinstance(miss, Miss) and "must be one value" in miss.reason
    g2 = graph([helper.make_node("Mul", ["a", "a"], ["y"], name="mul")])
    assert isinstance(run(op.Mul(x, x), g2), Match)


def test_constant_matched_by_value_with_tolerance():
    for value, fuses in [(0.5, True), (0.50004, True), (0.505, False)]:
        g = graph([helper.make_node("Mul", ["a", "h"], ["y"], name="mul")], inputs=("a",), inits=[scalar("h", value)])
        result = run(op.Mul(Var("x"), Const(value=0.5, label="half")), g)
        assert isinstance(result, Match) is fuses, (value, result)


def test_constant_node_counts_as_constant():
    c = helper.make_node("Constant", [], ["h"], value=scalar("v", 0.5), name="const")
    g = graph([c, helper.make_node("Mul", ["a", "h"], ["y"], name="mul")], inputs=("a",))
    assert isinstance(run(op.Mul(Var("x"), Const("half", 0.5)), g), Match)


def test_inner_value_used_outside_is_refused():
    g = graph([helper.make_node("Relu", ["a"], ["t"], name="relu"),
               helper.make_node("Neg", ["t"], ["y"], name="neg"),
               helper.make_node("Abs", ["t"], ["z"], name="abs")], inputs=("a",), outputs=("y", "z"))
    miss = run(op.Neg(op.Relu(Var("x"))), g, anchor=1)
    assert isinstance(miss, Miss)
    assert miss.reason == "'t' (from Relu) is also used by Abs 'abs' outside the match" and miss.at == "relu"
    assert miss.matched == 2 and miss.total == 2


def test_alternatives_record_their_tag_and_must_agree():
    x = Var("x")
    g = graph([helper.make_node("Relu", ["a"], ["t"], name="relu"),
               helper.make_node("Mul", ["t", "a"], ["y"], name="mul")], inputs=("a",))

    def maybe_relu():
        return maybe(op.Relu, x, tag="relu", present="relu")

    m = run(op.Mul(maybe_relu(), x), g)
    assert isinstance(m, Match) and m.has("relu") and m.label == "v[relu]"
    # the same tag twice must take the same branch: Relu(x)·Relu(x) is not Relu(x)·x
    miss = run(op.Mul(maybe_relu(), maybe_relu()), g)
    assert isinstance(miss, Miss)


def test_alternatives_are_asked_by_label_whatever_their_order():
    x = Var("x")
    g = graph([helper.make_node("Neg", ["a"], ["t"], name="neg"), helper.make_node("Relu", ["t"], ["y"], name="r")],
              inputs=("a",))
    for alternatives, labels in [((op.Neg(x), op.Abs(x)), ("neg", "abs")), ((op.Abs(x), op.Neg(x)), ("abs", "neg"))]:
        m = run(op.Relu(either(*alternatives, tag="sign", labels=labels)), g)
        assert m.took("neg") and not m.took("abs") and m.label == "v[neg]"
        with pytest.raises(LookupError, match="no alternative labelled 'negated'"):
            m.took("negated")  # a renamed label is an error, never a silent False
        with pytest.raises(LookupError, match="no optional piece tagged 'sign'"):
            m.has("sign")  # an either's alternatives are asked by label


def test_a_label_several_tags_share_is_asked_with_its_tag():
    x, y = Var("x"), Var("y")
    g = graph([helper.make_node("Neg", ["a"], ["n"], name="neg"), helper.make_node("Add", ["n", "b"], ["y"], name="add")])

    def negated(v, tag):
        return either(op.Neg(v), v, tag=tag, labels=("negated", ""))

    m = run(op.Add(negated(x, "left"), negated(y, "right")), g)
    assert m.took("negated", tag="left") and not m.took("negated", tag="right")
    with pytest.raises(LookupError, match="under the tags left, right"):
        m.took("negated")


def test_a_tag_used_twice_offers_the_same_labels():
    x = Var("x")
    with pytest.raises(ValueError, match="the tag 't' is used by two different choices"):
        Variant("v", op.Mul(either(op.Neg(x), x, tag="t", labels=("neg", "")),
                            either(x, op.Neg(x), tag="t", labels=("", "neg"))))


def test_what_check_proves_is_what_rewrite_receives():
    @dataclass(frozen=True)
    class Proven:
        scale: float

    received = []

    def rewrite(m, facts, emit):
        received.append(facts)
        return emit.Neg(m["x"])

    g = graph([helper.make_node("Relu", ["a"], ["y"], name="relu")], inputs=("a",))
    f = Fusion("F", [Variant("v", op.Relu(Var("x")))], rewrite=rewrite, check=lambda m: Proven(2.0))
    m = match_variant(g, f, f.variants[0], g.nodes[0])
    assert isinstance(m, Match) and m.proven == Proven(2.0)
    apply(m)
    assert received == [Proven(2.0)]


def test_shared_pattern_node_is_one_graph_node_but_copies_may_differ():
    x = Var("x")
    nodes = [helper.make_node("Relu", ["a"], ["r1"], name="r1"), helper.make_node("Relu", ["a"], ["r2"], name="r2"),
             helper.make_node("Mul", ["r1", "r2"], ["y"], name="mul")]
    shared = op.Relu(x)
    assert isinstance(run(op.Mul(shared, shared), graph(nodes, inputs=("a",))), Miss)
    m = run(op.Mul(op.Relu(x), op.Relu(x)), graph(nodes, inputs=("a",)))
    assert isinstance(m, Match) and len(m.nodes) == 3


def test_check_refusal_is_recorded_at_full_depth():
    g = graph([helper.make_node("Relu", ["a"], ["y"], name="relu")], inputs=("a",))
    miss = run(op.Relu(Var("x")), g, check=lambda m: "not today")
    assert miss.reason == "not today" and miss.matched == miss.total == 1


def test_attribute_predicates_and_defaults():
    g = graph([helper.make_node("ReduceMean", ["a"], ["y"], name="rm", axes=[-1])], inputs=("a",))
    assert isinstance(run(op.ReduceMean(Var("x"), axes=[-1], keepdims=1), g), Match)  # keepdims defaults to 1
    miss = run(op.ReduceMean(Var("x"), axes=lambda v, n: None if v == [0] else f"axes {v}"), g)
    assert "axes [-1]" in miss.reason


def test_size_counts_sub_expressions_written_twice_once():
    x = Var("x")
    p = either(op.Mul(op.Relu(x), op.Relu(x)), op.Neg(x), tag="t")
    assert p.size() == 2 and p.size({"t": 1}) == 1


def test_fusions_run_after_the_ones_they_name_list_order_otherwise():
    def named(name, after=()):
        return Fusion(name, [], rewrite=lambda m, facts, emit: None, after=after)

    a, b, c, d = named("A", after=("C",)), named("B"), named("C"), named("D", after=("A", "Absent"))
    assert [f.name for f in order([a, b, c, d])] == ["B", "C", "A", "D"]  # a name not present is no constraint
    assert [f.name for f in order([b, c])] == ["B", "C"]
    with pytest.raises(ValueError, match="cycle"):
        order([named("X", after=("Y",)), named("Y", after=("X",)), b])


def test_the_library_order_keeps_every_dependency():
    from fusekit import patterns
    position = {f.name: i for i, f in enumerate(order(patterns.ALL))}
    assert position["Gelu"] < position["BiasGelu"] and position["LayerNorm"] < position["SkipLayerNorm"]
    assert all(position[a] < position[f.name] for f in patterns.ALL for a in f.after)


def test_closest_miss_ranking_prefers_a_refused_whole_match():
    def miss(matched, total, complete=False):
        return Miss(fusion="F", variant="v", anchor="n", anchor_op="Add", matched=matched, total=total, at=None,
                    reason="", complete=complete)

    structural, refused = miss(5, 9), miss(3, 3, complete=True)
    assert closest(structural, refused) is refused and closest(refused, structural) is refused
    assert closest(miss(4, 9), miss(4, 5)).total == 5  # the larger share of its pattern
    assert closest(None, structural) is structural


def test_identity_set_holds_what_it_keys():
    a, b = gs.Variable("t"), gs.Variable("t")  # equal by value, two objects
    members = IdentitySet([a])
    assert a in members and b not in members and len(members) == 1
    seen = IdentityMap([(a, 1)])
    assert seen.get(b) is None and seen[a] == 1
