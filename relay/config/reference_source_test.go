package config

import (
	"bytes"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
)

// Reference renders docs/configuration.md. srcDir is this package's source
// directory and example the path of configs/jetrelay.yaml.
func Reference(srcDir, example string) ([]byte, error) {
	docs, err := fieldDocs(srcDir)
	if err != nil {
		return nil, err
	}
	if docs.example, err = exampleDocs(example); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(referenceIntro)
	docs.section(&b, reflect.TypeOf(Config{}), "", reflect.ValueOf(*Default()))
	return b.Bytes(), nil
}

// fieldDocs reads the doc comments of this package's struct types and fields.
func fieldDocs(dir string) (sourceDocs, error) {
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && p != dir {
			return skipDir(d, err)
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		files = append(files, f)
		return err
	})
	if err != nil {
		return sourceDocs{}, err
	}
	pkg, err := doc.NewFromFiles(fset, files, "github.com/jetrelay/jetrelay/relay/config")
	if err != nil {
		return sourceDocs{}, err
	}
	d := sourceDocs{types: map[string]string{}, fields: map[string]string{}}
	for _, t := range pkg.Types {
		d.types[t.Name] = oneLine(t.Doc)
		for _, spec := range t.Decl.Specs {
			ts, ok := spec.(*ast.TypeSpec)
			st, isStruct := ts.Type.(*ast.StructType)
			if !ok || !isStruct {
				continue
			}
			for _, f := range st.Fields.List {
				text := oneLine(f.Doc.Text() + " " + f.Comment.Text())
				for _, n := range f.Names {
					d.fields[ts.Name.Name+"."+n.Name] = text
				}
			}
		}
	}
	return d, nil
}

func skipDir(d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	if d.IsDir() {
		return filepath.SkipDir
	}
	return nil
}
