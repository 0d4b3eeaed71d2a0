# bench/perf_report.sh: reading a system-wide `perf record -a` file per process, for
# bench/run --profile (sourced; tests/daxfs/158 checks it on two runs of one program).
# FILTER is --pid PID or --comm NAME.
#
# Samples are read one by one (perf script), not from perf report's histogram: report
# applies --pid/--comm to whole entries, each owned by the thread of its first sample,
# so a symbol both sides ran (libc's memmove, the kernel's gup) went wholly to whichever
# ran it first, and it drops a sort column a filter makes constant, which moves the
# fields a parser counts on.

# samples_of DATA FILTER...: how many samples FILTER's threads have
samples_of()
{
	local data=$1
	shift
	perf script -i "$data" -G -F tid "$@" 2>/dev/null | wc -l
}

# top_symbols DATA FILTER...: the symbols with most self samples among FILTER's threads,
# as shares of those threads' samples (those of 1% or more), "SYMBOL (DSO)"
top_symbols()
{
	local data=$1
	shift
	perf script -i "$data" -G -F tid,ip,sym,dso "$@" 2>/dev/null |
		awk 'NF >= 3 {
			$1 = ""; $2 = ""; key = substr($0, 3)
			n[key]++; total++
		}
		END { for (k in n) if (n[k] >= total / 100) printf "%8.2f%%  %s\n", 100 * n[k] / total, k }' |
		sort -rn | head -n 25
}
