// composecheck loads a compose file with compose-go, the library behind
// `docker compose config`: schema validation, interpolation, merge keys and
// extends, without a Docker engine. deploy/validate runs it when the docker
// compose plugin is absent.
//
//	go run . -f deploy/docker-compose.yml -env-file deploy/.env.example -set POSTGRES_PASSWORD=x
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	file := flag.String("f", "docker-compose.yml", "compose file")
	envFile := flag.String("env-file", "", "file with the variables used for interpolation")
	var sets multi
	flag.Var(&sets, "set", "KEY=VALUE for interpolation (repeatable)")
	flag.Parse()

	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fail(fmt.Errorf("-set wants KEY=VALUE, got %q", kv))
		}
		os.Setenv(k, v)
	}
	options := []cli.ProjectOptionsFn{cli.WithOsEnv, cli.WithName("composecheck")}
	if *envFile != "" {
		options = append(options, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	opts, err := cli.NewProjectOptions([]string{*file}, options...)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	names := project.ServiceNames()
	sort.Strings(names)
	fmt.Printf("compose OK: %d services (%s)\n", len(names), strings.Join(names, ", "))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose INVALID:", err)
	os.Exit(1)
}
