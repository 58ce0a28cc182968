"""Late fees within state caps (issue 9, part 2): the rule table and allocation orders."""

from collector.fees.rules import FeeTable, LateFeeRule, load_rules, parse_rules, valid_state

__all__ = ["FeeTable", "LateFeeRule", "load_rules", "parse_rules", "valid_state"]
