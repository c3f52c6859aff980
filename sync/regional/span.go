package regional

import (
	"math/big"
	"slices"
	"strings"
)

// symDiff is the size of the symmetric difference of two sorted site lists:
// the number of sites whose counts the difference of two cells isolates.
func symDiff(a, b []string) int {
	i, j, n := 0, 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			i++
			j++
		case a[i] < b[j]:
			n++
			i++
		default:
			n++
			j++
		}
	}
	return n + len(a) - i + len(b) - j
}

// exposedGroups returns the groups of fewer than minSites sites whose summed
// counts some linear combination of the cells reveals, each keyed by its
// sorted site names joined with NUL. cells are the site sets of cells of one
// period; within a period a site's bucket is the same in every cell, so a
// cell's figures are the sum of its sites' buckets and any combination of
// cells is a combination of buckets.
//
// Pairwise differences are not enough: with S of 7 sites, X and W of 5, the
// cells S, S∪X and S∪X∖W (W ⊂ S) differ pairwise by 5, 5 and 10 sites, yet
// (S∪X∖W) − ((S∪X) − S) is the 2 sites of S∖W.
//
// Sites that sit in exactly the same cells can never be told apart by any
// combination, so they form one group (one column). A group's indicator is
// in the row space of the cells exactly when it is a row of the reduced row
// echelon form, which exact rational elimination finds.
func exposedGroups(cells [][]string, minSites int) map[string]bool {
	// pattern[s] has byte i set when site s is in cell i.
	pattern := map[string][]byte{}
	for i, c := range cells {
		for _, s := range c {
			p := pattern[s]
			if p == nil {
				p = make([]byte, len(cells))
				pattern[s] = p
			}
			p[i] = 1
		}
	}
	byPattern := map[string][]string{}
	for s, p := range pattern {
		byPattern[string(p)] = append(byPattern[string(p)], s)
	}
	var groups [][]string
	var patterns []string
	for p, sites := range byPattern {
		slices.Sort(sites)
		groups = append(groups, sites)
		patterns = append(patterns, p)
	}

	m := make([][]*big.Rat, len(cells))
	for i := range m {
		m[i] = make([]*big.Rat, len(groups))
		for j, p := range patterns {
			m[i][j] = big.NewRat(int64(p[i]), 1)
		}
	}
	exposed := map[string]bool{}
	for _, j := range unitColumns(m) {
		if len(groups[j]) < minSites {
			exposed[strings.Join(groups[j], "\x00")] = true
		}
	}
	return exposed
}

// unitColumns brings m to reduced row echelon form over the rationals, in
// place, and returns every column j whose unit vector e_j is in the row
// space. In RREF a vector of the row space has, at each pivot column, the
// coefficient of that pivot's row; e_j is zero at every pivot but j, so it is
// in the row space only if it equals the row whose pivot is j.
func unitColumns(m [][]*big.Rat) []int {
	if len(m) == 0 {
		return nil
	}
	rows, cols := len(m), len(m[0])
	tmp := new(big.Rat)
	r := 0
	for c := 0; c < cols && r < rows; c++ {
		p := r
		for p < rows && m[p][c].Sign() == 0 {
			p++
		}
		if p == rows {
			continue
		}
		m[r], m[p] = m[p], m[r]
		inv := new(big.Rat).Inv(m[r][c])
		for k := c; k < cols; k++ {
			m[r][k].Mul(m[r][k], inv)
		}
		for i := range rows {
			if i == r || m[i][c].Sign() == 0 {
				continue
			}
			f := new(big.Rat).Set(m[i][c])
			// Columns left of c are zero in row r, so they need no update.
			for k := c; k < cols; k++ {
				m[i][k].Sub(m[i][k], tmp.Mul(f, m[r][k]))
			}
		}
		r++
	}
	var unit []int
	for i := range r {
		nonzero, col := 0, -1
		for k := range cols {
			if m[i][k].Sign() != 0 {
				nonzero++
				col = k
			}
		}
		if nonzero == 1 {
			unit = append(unit, col)
		}
	}
	return unit
}
