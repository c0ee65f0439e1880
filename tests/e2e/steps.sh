# The steps of the original's end-to-end scenario (scripts/e2e-test.sh at v0.5), its
# expected outputs and fixed waits unchanged; sourced by tests/e2e/e2e-test.sh (our plugins)
# and bench/original_e2e.sh (ours or the original's). Needs $INFRAKIT (the CLI that runs
# the steps) and $INSTANCE_FILE_DIR (the file plugin's directory), and the plugins running.

expect_exact_output() {
  message=$1
  cmd=$2
  expected_output=$3

  actual_output="$($2)"
  echo -n "--> $message: "
  if [ "$actual_output" = "$3" ]
  then
    echo 'PASS'
  else
    echo 'FAIL'
    echo "Expected output: $expected_output"
    echo "Actual output: $actual_output"
    exit 1
  fi
}

expect_output_lines() {
  message=$1
  cmd=$2
  expected_lines=$3

  actual_line_count=$($2 | wc -l)
  echo -n "--> $message: "
  if [ "$actual_line_count" -eq "$3" ]
  then
    echo 'PASS'
  else
    echo 'FAIL'
    echo "Expected line count: $expected_lines"
    echo "Actual line count: $actual_line_count"
    exit 1
  fi
}

expect_output_lines "0 instances should exist" "$INFRAKIT instance-file describe -q " "0"

echo "Commiting"
$INFRAKIT group commit cattle.json

echo 'Waiting for group to be provisioned'
sleep 2

expect_output_lines "5 instances should exist in group" "$INFRAKIT group describe cattle -q" "5"
expect_output_lines "5 instances should exist" "$INFRAKIT instance-file describe -q " "5"

$INFRAKIT group free cattle
$INFRAKIT group commit cattle.json

expect_exact_output "Should be watching one group" "$INFRAKIT group ls -q" "cattle"

expect_exact_output \
  "Update should roll 5 and scale group to 10" \
  "$INFRAKIT group commit cattle2.json --pretend" \
  "Committing cattle would involve: Performing a rolling update on 5 instances, then adding 5 instances to increase the group size to 10"

$INFRAKIT group commit cattle2.json

sleep 5

expect_output_lines "10 instances should exist in group" "$INFRAKIT group describe cattle -q" "10"

# Terminate 3 instances.
pushd $INSTANCE_FILE_DIR
  rm $(ls | head -3)
popd

sleep 5

expect_output_lines "10 instances should exist in group" "$INFRAKIT group describe cattle -q" "10"

$INFRAKIT group destroy cattle
expect_output_lines "0 instances should exist" "$INFRAKIT instance-file describe -q " "0"

echo 'ALL TESTS PASSED'
