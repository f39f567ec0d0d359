"""The student loop (Zhou & Chiam 2023, Eq. 6) and what it runs over: populations of members, the
selection of a member's weights, and what `resume=true` may change."""
